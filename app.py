"""DermaDistill: explainable skin-lesion classification. Run with `streamlit run app.py`."""

import logging
import os
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # lime and pytorch-grad-cam draw progress bars on stderr

import streamlit as st

ASSETS = Path(__file__).parent / "assets"

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
st.set_page_config(page_title="DermaDistill", page_icon=str(ASSETS / "logo.png"), layout="wide")
st.logo(str(ASSETS / "logo.png"))

from pages.common import warm_up  # noqa: E402  (after set_page_config)

try:
    warm_up()
except ValueError as exc:  # a deployer's setting the app cannot honour: say which, and stop
    st.error(f"Configuration error: {exc}. The deployer sets it before starting the app.")
    st.stop()
pages = st.navigation([
    st.Page("pages/diagnose.py", title="Diagnose", icon=":material/biotech:", default=True),
    st.Page("pages/compare.py", title="Compare models", icon=":material/monitoring:"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
    st.Page("pages/train.py", title="Train (admin)", icon=":material/model_training:"),
    st.Page("pages/about.py", title="About", icon=":material/info:"),
])
with st.sidebar:
    st.caption("Decision support and education — **not a diagnostic device**.")
pages.run()
