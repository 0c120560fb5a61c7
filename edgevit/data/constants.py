"""Normalisation constants shared by the datasets and the model zoo.

A leaf module (it imports nothing), so ``edgevit.models`` can read the ImageNet statistics without
importing the datasets.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per-channel RGB mean of ImageNet-1k, images scaled to [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)  # per-channel RGB standard deviation, same scaling
