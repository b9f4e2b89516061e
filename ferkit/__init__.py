"""ferkit: facial-expression recognition that runs on a plain CPU.

>>> import ferkit
>>> recognizer = ferkit.load()            # the bundled default model (ONNX Runtime, no torch)
>>> result = recognizer.predict("photo.jpg")
>>> result[0].label, result[0].probabilities, result.to_dict()
"""

from .labels import EMOTIONS, FERPLUS_EMOTIONS

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "FERPLUS_EMOTIONS", "load", "Recognizer", "FaceResult", "ImageResult", "__version__"]


def __getattr__(name: str):
    # Loaded on first use, so `import ferkit` stays cheap: the inference stack (onnxruntime, cv2) and the results.
    if name in ("load", "Recognizer"):
        from . import infer

        return getattr(infer, name)
    if name in ("FaceResult", "ImageResult"):
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")
