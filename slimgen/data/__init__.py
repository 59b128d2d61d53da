"""Image data sets as float tensors in [-1, 1], shape (N, C, H, W), with optional labels.

Sources: Fashion-MNIST (Debian's ``dataset-fashion-mnist``), scikit-learn digits, any
MNIST-format IDX pair, an image folder (PNG/JPEG) and ``.npy``/``.npz`` arrays.
"""

from slimgen.data.dataset import ImageSet, load_dataset
from slimgen.data.idx import read_idx

__all__ = ["ImageSet", "load_dataset", "read_idx"]
