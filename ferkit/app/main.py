"""The Streamlit script behind ``ferkit app``: page setup, the sidebar, and the page navigation."""

from pathlib import Path

import streamlit as st

from ferkit.app.common import render_sidebar
from ferkit.app.uploads import UPLOAD_ROOT, removed_at_start

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="ferkit: facial expressions", page_icon="😄", layout="wide")
removed_at_start(str(UPLOAD_ROOT))  # uploads a crashed server left behind; once per process
pages = st.navigation([
    st.Page(VIEWS / "analyse.py", title="Analyse photos", icon="🔍", default=True),
    st.Page(VIEWS / "camera.py", title="Live camera", icon="🎥"),
    st.Page(VIEWS / "video.py", title="Video", icon="🎬"),
    st.Page(VIEWS / "preprocessing.py", title="Preprocessing", icon="🧪"),
    st.Page(VIEWS / "data.py", title="Data", icon="📊"),
    st.Page(VIEWS / "model.py", title="Model", icon="🧠"),
])
render_sidebar()
st.sidebar.caption("Everything runs on this computer: nothing is sent anywhere else, and nothing is kept once analysed.")
pages.run()
