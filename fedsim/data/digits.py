"""scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), split among users.

The images ship inside the scikit-learn wheel, so this data set works offline. All
images are partitioned among the training clients and the design pool together
(label-Dirichlet or IID), then each user's share is split into train and test parts
(``PartitionedDataset``).
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.data.base import PartitionedDataset
from fedsim.data.options import DigitsOptions


class DigitsDataset(PartitionedDataset):
    """The sklearn digits as images of shape (1, 8, 8) in [0, 1], split among users.

    Takes ``FederatedDataset``'s arguments; ``data.options``: ``DigitsOptions``
    (``partition``: ``dirichlet`` or ``iid``, ``alpha``).

    Raises:
        DataError: If an argument is invalid or the images cannot be split that way.
    """

    name = "digits"
    num_classes = 10
    input_shape = (1, 8, 8)
    input_kind = "float"
    options: DigitsOptions

    def _build(self) -> None:
        from sklearn.datasets import load_digits  # deferred: sklearn is slow to import

        digits = load_digits()
        self._x = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
        self._y = torch.from_numpy(digits.target.astype(np.int64))
        self._partition(digits.target)

    def _samples(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(rows)
        return self._x[index], self._y[index]
