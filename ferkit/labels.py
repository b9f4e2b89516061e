"""The emotion label lists, defined once.

FER2013 order is the `emotion` code of fer2013.csv. FER+ uses the same seven in the same
order and appends ``contempt``, so index i means the same emotion in both label sets.
"""

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS_EMOTIONS: tuple[str, ...] = EMOTIONS + ("contempt",)

# Column names of fer2013new.csv, in file order, mapped onto our names.
FERPLUS_VOTE_COLUMNS: dict[str, str] = {
    "neutral": "neutral",
    "happiness": "happy",
    "surprise": "surprise",
    "sadness": "sad",
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "contempt": "contempt",
}

SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
