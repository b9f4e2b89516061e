"""The Streamlit web app: ``ferkit app`` starts it (see launch.py); main.py is the Streamlit script.

Pages live in ``views/`` as small Streamlit scripts; what they share (model choice, cached loading,
upload checks, result tables) is in ``common.py``, so the analysis itself is plain, testable Python.
"""

# A bundled model name or an .onnx path: the model the app starts with (`ferkit app --model` sets it).
MODEL_ENV = "FERKIT_MODEL"
