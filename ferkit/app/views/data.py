"""Data: FER2013 (or FER+) class distribution per split and sample faces per class."""

import pandas as pd
import streamlit as st

from ferkit.app.common import EMOJI
from ferkit.data import FERPLUS_CSV, FaceSet, load_ferplus_split, load_split
from ferkit.errors import DataError
from ferkit.datastats import pick_per_class
from ferkit.labels import SPLITS
from ferkit.settings import DATA_ENV, data_dir

LABEL_SETS = ("FER2013 (7 classes)", "FER+ (8 classes, majority vote)")
SAMPLES_PER_CLASS = 10


@st.cache_resource(show_spinner="Reading the dataset…", max_entries=6)
def load_faces(split: str, ferplus: bool) -> FaceSet:
    """One split, loaded once per server process (read-only: pages only index into it)."""
    return load_ferplus_split(split) if ferplus else load_split(split)


def distribution(sets: dict[str, FaceSet]) -> pd.DataFrame:
    """Faces per class (rows) and split (columns), with a total."""
    classes = next(iter(sets.values())).classes
    table = pd.DataFrame({split: faces.counts() for split, faces in sets.items()},
                         index=pd.Index(classes, name="class"))
    table["total"] = table.sum(axis=1)
    table["share"] = (table["total"] / table["total"].sum()).map("{:.1%}".format)
    return table


st.title("📊 The training data")
root = data_dir()
missing = [split for split in SPLITS if not (root / f"{split}.tar.gz").is_file()]
if missing:
    st.info(
        f"FER2013 is not on this computer (looked in `{root}`; missing {', '.join(missing)}). "
        f"Set the environment variable `{DATA_ENV}` to the folder that holds Training.tar.gz, PublicTest.tar.gz "
        "and PrivateTest.tar.gz, then restart the app. The other pages work without it."
    )
    st.stop()

st.markdown(
    "FER2013: 35,887 grayscale faces of 48×48 px from web image searches, each with one of seven labels. "
    "FER+ re-labelled the same faces by 10 annotators each, adding *contempt* and dropping unusable faces."
)
label_set = st.radio("Labels", LABEL_SETS, horizontal=True, key="label_set",
                     disabled=not (root / FERPLUS_CSV).is_file(),
                     help=None if (root / FERPLUS_CSV).is_file() else f"{FERPLUS_CSV} is missing from {root}")
ferplus = label_set == LABEL_SETS[1]
try:
    sets = {split: load_faces(split, ferplus) for split in SPLITS}
except DataError as e:
    st.error(str(e))
    st.stop()

st.subheader("Class distribution", divider="gray")
table = distribution(sets)
left, right = st.columns([1, 1])
left.dataframe(table, width="stretch")
right.bar_chart(table[list(SPLITS)], stack=True, horizontal=True, height=320)
smallest, largest = table["total"].idxmin(), table["total"].idxmax()
st.caption(f"The classes are unbalanced: {largest} has {table['total'][largest] / table['total'][smallest]:.0f}× "
           f"the faces of {smallest}. Accuracy alone flatters a model that ignores the rare classes, "
           "so the Model page also shows per-class recall and F1.")

st.subheader("Sample faces", divider="gray")
split = st.selectbox("Split", SPLITS, key="sample_split")
seed = st.session_state.setdefault("sample_seed", 0)
if st.button("🔀 Other faces", key="shuffle"):
    seed = st.session_state["sample_seed"] = seed + 1
faces = sets[split]
for name, picked in zip(faces.classes, pick_per_class(faces, SAMPLES_PER_CLASS, seed)):
    st.markdown(f"**{EMOJI.get(name, '')} {name}** ({int(table[split][name]):,} faces)")
    if len(picked):
        st.image(list(picked), width=72)
