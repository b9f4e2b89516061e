"""ferkit: facial-expression recognition that runs on a plain CPU.

>>> import ferkit
>>> recognizer = ferkit.load()            # the bundled default model (ONNX Runtime, no torch)
>>> faces = recognizer.predict("photo.jpg")
>>> faces[0].label, faces[0].probabilities
"""

from .labels import EMOTIONS, FERPLUS_EMOTIONS

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "FERPLUS_EMOTIONS", "load", "Recognizer", "FaceResult", "__version__"]


def __getattr__(name: str):
    # The inference stack (onnxruntime, cv2) loads on first use, so `import ferkit` stays cheap.
    if name in ("load", "Recognizer", "FaceResult"):
        from . import infer

        return getattr(infer, name)
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")
