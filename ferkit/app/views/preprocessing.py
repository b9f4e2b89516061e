"""Preprocessing: the original report's OpenCV steps on a face, with every parameter on a slider."""

import cv2
import numpy as np
import streamlit as st

from ferkit.app.common import IMAGE_TYPES, SAMPLES_DIR, rgb, sample_title
from ferkit.app.uploads import too_large
from ferkit.errors import FerkitError
from ferkit.faces import detect_faces
from ferkit.images import read_image
from ferkit.preprocess import REPORT, ReportParams, report_pipeline

SHOWN_SIDE = 192  # px: the 48-px stages are enlarged (nearest neighbour) so their pixels stay visible
FACE_MARGIN = 0.15  # of the box side, so the crop shows the whole face like a FER2013 image
SLIDERS = {  # field: (label, min, max, step)
    "size": ("Resize to (px)", 24, 96, 8),
    "blur_ksize": ("Gaussian blur kernel (odd)", 1, 15, 2),
    "sharpen_alpha": ("Sharpen: weight of the image", 1.0, 3.0, 0.1),
    "sharpen_beta": ("Sharpen: weight of the blur", -2.0, 0.0, 0.1),
    "nlm_h": ("NL-means strength h", 0.0, 30.0, 1.0),
    "nlm_h_color": ("NL-means colour strength", 0.0, 30.0, 1.0),
    "nlm_template": ("NL-means template window (odd)", 3, 11, 2),
    "nlm_search": ("NL-means search window", 5, 35, 1),
}
CANNY_KEY = "pp_canny"


def reset_params() -> None:
    for field in SLIDERS:
        st.session_state[f"pp_{field}"] = getattr(REPORT, field)
    st.session_state[CANNY_KEY] = (REPORT.canny_low, REPORT.canny_high)


def chosen_params() -> ReportParams:
    """The sliders' ReportParams; they start at (and reset to) the report's own values."""
    with st.sidebar.expander("⚙️ Preprocessing parameters", expanded=True):
        values = {field: st.slider(label, low, high, value=getattr(REPORT, field), step=step, key=f"pp_{field}")
                  for field, (label, low, high, step) in SLIDERS.items()}
        low, high = st.slider("Canny thresholds", 0.0, 255.0, (REPORT.canny_low, REPORT.canny_high), 5.0,
                              key=CANNY_KEY)
        st.button("↩️ Report's values", on_click=reset_params, key="pp_reset")
    return ReportParams(**values, canny_low=low, canny_high=high)


def chosen_image() -> tuple[str, bytes]:
    """(name, bytes) of the uploaded image, else of the chosen sample photo."""
    upload = st.file_uploader("A photo or a face", type=IMAGE_TYPES, key="pp_upload",
                              help="Leave empty to use a sample photo.")
    if upload:
        return upload.name, upload.getvalue()
    samples = sorted(SAMPLES_DIR.glob("*.jpg"))
    sample = st.selectbox("…or a sample photo", samples, format_func=sample_title, key="pp_sample")
    return sample.name, sample.read_bytes()


def face_region(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """The largest detected face with a margin, or the whole image (False) when none is found."""
    detections = detect_faces(image)
    if not detections:
        return image, False
    x, y, w, h = max((d.box for d in detections), key=lambda b: b[2] * b[3])
    m = int(FACE_MARGIN * max(w, h))
    return image[max(y - m, 0):y + h + m, max(x - m, 0):x + w + m], True


def enlarged(image: np.ndarray) -> np.ndarray:
    """The image at SHOWN_SIDE px wide, nearest neighbour for small stages, RGB for display."""
    height, width = image.shape[:2]
    size = (SHOWN_SIDE, max(1, round(height * SHOWN_SIDE / width)))
    interpolation = cv2.INTER_NEAREST if width < SHOWN_SIDE else cv2.INTER_AREA
    return rgb(cv2.resize(image, size, interpolation=interpolation))


st.title("🧪 The report's preprocessing, step by step")
st.markdown(
    "The original report prepared each face with OpenCV: **resize** to 48×48, **Gaussian blur**, **sharpen** "
    "(image minus part of its blur), **non-local-means denoise**, and compared **Canny edges** before and after. "
    "Move the sliders in the sidebar to see what each step does. ferkit measured whether these steps help its "
    "models; the Model page's metadata says whether the loaded model uses them (`preprocess`)."
)
params = chosen_params()
name, data = chosen_image()
if too_large(name, len(data)):
    st.error(too_large(name, len(data)))
    st.stop()
try:
    face, found = face_region(read_image(data))
    stages = report_pipeline(face, params)
except FerkitError as e:
    st.error(f"{name}: {e}")
    st.stop()
if not found:
    st.info(f"No face found in {name}: the steps run on the whole image.")

columns = st.columns(4)
panels = [
    ("original" if not found else "face (detected)", stages["original"]),
    (f"blurred ({params.blur_ksize}×{params.blur_ksize})", stages["blurred"]),
    (f"sharpened ({params.sharpen_alpha:g}·image {params.sharpen_beta:+g}·blur)", stages["sharpened"]),
    (f"denoised (h={params.nlm_h:g})", stages["denoised"]),
]
for column, (caption, image) in zip(columns, panels):
    column.image(enlarged(image), caption=caption, width="content")
left, right, _ = st.columns([1, 1, 2])
edges = f"Canny({params.canny_low:g}, {params.canny_high:g})"
left.image(enlarged(stages["edges_original"]), caption=f"{edges} of the resized face", width="content")
right.image(enlarged(stages["edges_processed"]), caption=f"{edges} after blur, sharpen, denoise", width="content")
kept = int(np.count_nonzero(stages["edges_processed"]))
before = int(np.count_nonzero(stages["edges_original"]))
st.caption(f"Edge pixels: {before} before, {kept} after preprocessing ({params.size}×{params.size} px).")
