"""psc6k: the PSC6K photo-sketch correspondence benchmark toolkit.

The core package needs only numpy/scipy/scikit-learn/opencv/pandas; it never imports torch or
the web stack. ``evaluation``, ``annotation_app`` and ``model_zoo`` build on it.
"""

__version__ = "0.1.0"

#: Side of every Sketchy image in pixels; PCK thresholds are ``alpha * IMAGE_SIZE``.
IMAGE_SIZE = 256
#: Keypoints per sketch in PSC6K.
NUM_KEYPOINTS = 8
