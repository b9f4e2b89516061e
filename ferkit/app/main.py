"""The Streamlit script behind ``ferkit app``: page setup, the sidebar, and the page navigation."""

from pathlib import Path

import streamlit as st

from ferkit.app.common import render_sidebar

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="ferkit: facial expressions", page_icon="😄", layout="wide")
pages = st.navigation([
    st.Page(VIEWS / "analyse.py", title="Analyse photos", icon="🔍", default=True),
    st.Page(VIEWS / "video.py", title="Video", icon="🎬"),
    st.Page(VIEWS / "preprocessing.py", title="Preprocessing", icon="🧪"),
    st.Page(VIEWS / "data.py", title="Data", icon="📊"),
    st.Page(VIEWS / "model.py", title="Model", icon="🧠"),
])
render_sidebar()
st.sidebar.caption("Everything runs on this computer: nothing is uploaded anywhere, nothing is kept on disk.")
pages.run()
