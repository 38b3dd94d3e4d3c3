"""Generated data: 2..8 topics of real English words, deterministic from a seed (test mode,
the tests and the bench), written in AG News's layout with its classes.txt."""
import csv

import numpy as np

from .store import atomic_file, write_file

TOPICS = {  # name -> its words (GloVe has a vector for each); test mode's K topics are the first K
    "World": "government minister president election war troops police country military embassy "
             "parliament rebels nuclear peace talks leader killed iraq united nations border".split(),
    "Sports": "game team season coach player league championship match score win cup olympic "
              "tournament football baseball basketball victory defeat goal tennis".split(),
    "Business": "company shares market profit stocks sales investors quarter economy prices bank "
                "oil earnings billion percent deal growth trade dollar retail".split(),
    "Sci/Tech": "software internet computer technology users microsoft online web wireless search "
                "space research science data network phone apple google chip digital".split(),
    "Health": "health hospital doctors patients disease medical drug cancer vaccine treatment "
              "heart surgery nurses clinic infection diabetes flu medicine symptoms therapy".split(),
    "Entertainment": "film movie actor actress music album singer band concert hollywood television "
                     "festival award oscar theater comedy celebrity director songs premiere".split(),
    "Weather": "weather storm hurricane rain snow forecast temperatures wind flooding tornado "
               "winter heat clouds degrees drought thunderstorms cold sunny humid frost".split(),
    "Travel": "travel airline flights hotel tourists airport vacation passengers cruise beach "
              "resort trip tourism luggage destination holiday visitors journey booking ticket".split(),
}
_COMMON_WORDS = ("the a of to and in on for with said new after is that by at from as "
                 "it was his has have will more its an year first two week monday people").split()


def generate_rows(n_rows, seed, num_classes=4):
    """-> (labels, texts): n_rows balanced rows of the first num_classes TOPICS; each text mixes
    topic and common words, with some words from other topics so the task is not trivial."""
    topic_words = list(TOPICS.values())[:num_classes]
    rng = np.random.default_rng(seed)
    labels = np.arange(n_rows, dtype=np.int32) % num_classes
    rng.shuffle(labels)
    texts = []
    for label in labels:
        length = rng.integers(12, 45)
        words = []
        for _ in range(length):
            r = rng.random()
            topic = label if r < 0.25 else rng.integers(num_classes) if r < 0.35 else None
            pool = _COMMON_WORDS if topic is None else topic_words[int(topic)]
            words.append(pool[rng.integers(len(pool))])
        texts.append(" ".join(words).capitalize() + ".")
    return labels, texts


def write_labeled_csv(path, labels, texts):
    """Write rows in the AG News layout: "class","title","description" (class 1..K)."""
    with atomic_file(path, "w") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        for label, text in zip(labels, texts):
            title, _, description = text.partition(" ")
            writer.writerow([int(label) + 1, title, description])


def write_class_names(path, names):
    """Write classes.txt: one name a line, label 1 first (atomic: a reader sees all or none)."""
    write_file(path, "".join(name + "\n" for name in names))
