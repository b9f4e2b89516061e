"""The Streamlit web app: ``ferkit app`` starts it (see launch.py); main.py is the Streamlit script.

Pages live in ``views/`` as small Streamlit scripts; what they share (model choice, cached loading,
upload checks, result tables) is in ``common.py``, so the analysis itself is plain, testable Python.
"""

# A bundled model name or an .onnx path: the model the app starts with (`ferkit app --model` sets it).
MODEL_ENV = "FERKIT_MODEL"
# The one limit on an uploaded file (photo or video): `ferkit app` sets Streamlit's server.maxUploadSize
# to it, the uploaders state it, and the pages read it back from that option (uploads.upload_limit_mb).
MAX_UPLOAD_MB = 200
