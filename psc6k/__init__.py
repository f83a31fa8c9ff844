"""psc6k: the PSC6K photo-sketch correspondence benchmark toolkit.

The core package needs only numpy/scipy/scikit-learn/opencv/pandas; it never imports torch or
the web stack, and names none of the parts that build on it (the annotation app, the scoring
server, the model zoo): their commands plug into ``psc6k`` through entry points (:mod:`psc6k.cli`).
"""

__version__ = "0.1.0"

#: Side of every Sketchy image in pixels; PCK thresholds are ``alpha * IMAGE_SIZE``.
IMAGE_SIZE = 256
#: Keypoints per sketch in PSC6K.
NUM_KEYPOINTS = 8
