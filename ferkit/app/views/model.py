"""Model: what the loaded model is (metadata, checksum) and how well it does (its evaluation report)."""

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from ferkit.app.common import EMOJI, bundled_models, require_recognizer, shipped_report_dir
from ferkit.app.tiers import bundled_tiers, source_caption
from ferkit.evaluate import CONFUSION_PNG, METRICS_FILE, RELIABILITY_PNG, REPORT_FILE, ROC_PNG
from ferkit.fileio import sha256_of
from ferkit.labels import EMOTIONS, FERPLUS_EMOTIONS

FIGURES_HEADING = "## Figures"  # where evaluate's report.md starts listing its PNGs
ROC_PX = 720  # the ROC figure is square: full width would make it taller than the screen


@st.cache_data(show_spinner=False, max_entries=8)
def file_sha256(path: str, mtime_ns: int) -> str:
    return sha256_of(path)


def metadata_table(meta: dict) -> pd.DataFrame:
    return pd.DataFrame({"value": [json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in meta.values()]},
                        index=pd.Index(list(meta), name="key"))


def per_class_table(metrics: dict) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(metrics["per_class"], orient="index")
    table.index = [f"{EMOJI.get(name, '')} {name}" for name in table.index]
    for average in ("macro", "weighted"):
        table.loc[f"{average} average"] = {**metrics[average], "support": metrics["n"]}
    return table[["precision", "recall", "f1", "roc_auc", "support"]]


def render_report(report_dir: Path) -> None:
    metrics = json.loads((report_dir / METRICS_FILE).read_text())
    run = metrics.get("run", {})
    split = run.get("split", "the test split")
    st.markdown(f"Measured on **{split}** ({metrics['n']:,} faces)"
                + (f", test-time augmentation `{run['tta']}`" if run.get("tta") else "") + ".")
    a, b, c, d = st.columns(4)
    a.metric("Accuracy", f"{metrics['accuracy']:.1%}")
    b.metric("Top-2 accuracy", f"{metrics['top2_accuracy']:.1%}")
    c.metric("Macro F1", f"{metrics['macro']['f1']:.3f}")
    d.metric("Calibration error (ECE)", f"{metrics['ece']:.3f}", help="Lower is better: 0 means the shown "
             "probabilities match how often the model is right.")
    st.dataframe(per_class_table(metrics).style.format(precision=3), width="stretch")
    # The confusion and reliability figures hold two wide panels each: they get the full width.
    for file, caption, width in ((CONFUSION_PNG, "Confusion matrix", "stretch"),
                                 (RELIABILITY_PNG, "Reliability diagram (calibration)", "stretch"),
                                 (ROC_PNG, "ROC curves, one class vs the rest", ROC_PX)):
        if (report_dir / file).is_file():
            st.image(str(report_dir / file), caption=caption, width=width)
    if (report_dir / REPORT_FILE).is_file():
        with st.expander("The full report: run details and calibration"):
            # The figures are shown above; their relative links would not resolve in the page.
            st.markdown((report_dir / REPORT_FILE).read_text().split(FIGURES_HEADING)[0])


def evaluate_hint(model: str, classes: tuple[str, ...]) -> str:
    """The ``ferkit evaluate`` line that works for this model, and what it needs: a FER2013 split only when its
    classes are FER2013's or FER+'s, else the user's own labelled folders."""
    if classes in (EMOTIONS, FERPLUS_EMOTIONS):
        return f"`ferkit evaluate {model} --split PrivateTest --out report/` (it needs the FER2013 data)"
    return (f"`ferkit evaluate {model} --data-folder DIR --out report/` (DIR holds one folder of labelled photos "
            f"per class: {', '.join(classes)})")


def render_tiers(current: str) -> None:
    """Every bundled model with its accuracy and time per face (issue 12's tiers)."""
    tiers = bundled_tiers(bundled_models())
    if not tiers:
        return
    st.subheader("🏷️ Bundled models", divider="gray")
    table = pd.DataFrame([t.row() for t in tiers]).set_index("model")
    table.index = [f"{name} (loaded)" if name == current else name for name in table.index]
    st.dataframe(table, width="stretch")
    st.caption(source_caption())


recognizer, settings = require_recognizer()
meta = recognizer.meta
source = settings.choice.source
st.title(f"🧠 The model: {meta.get('name', recognizer.name)}")
size = meta.get("input_size")
a, b, c, d = st.columns(4)
a.metric("Classes", len(recognizer.classes))
b.metric("Input", f"{size}×{size} gray" if size else "?")
c.metric("Temperature", f"{meta['temperature']:.3f}" if isinstance(meta.get("temperature"), (int, float)) else "?",
         help="Calibration: probabilities are softmax(logits / T), T fitted on PublicTest.")
d.metric("Unsure below (default)", f"{meta.get('unsure_threshold', '?')}",
         help="The model's own threshold; the sidebar slider overrides it.")
st.markdown("Classes, in output order: " + ", ".join(f"{EMOJI.get(c, '')} {c}" for c in recognizer.classes))
path = Path(recognizer.source)
st.markdown(f"File `{path.name}` ({path.stat().st_size / 2**20:.1f} MB), "
            f"SHA-256 `{file_sha256(str(path), path.stat().st_mtime_ns)}`")
with st.expander("All metadata stored in the model file"):
    st.dataframe(metadata_table(meta), width="stretch")
render_tiers(source)

st.subheader("📏 Evaluation report", divider="gray")
report_dir = shipped_report_dir(source)
if report_dir is None:
    st.info(f"`{path.name}` is not a bundled model, so no report is shipped with it. Make one with "
            f"{evaluate_hint(str(path), tuple(recognizer.classes))}.")
elif (report_dir / METRICS_FILE).is_file():
    render_report(report_dir)
else:
    st.info(f"No evaluation report is shipped for the bundled model `{source}` "
            f"(looked for {report_dir / METRICS_FILE}). "
            f"Make one with {evaluate_hint(source, tuple(recognizer.classes))}.")
