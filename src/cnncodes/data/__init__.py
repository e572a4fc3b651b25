"""Where images and labels come from: folders, manifests, the CIFAR-10 archive, arrays; decoding of image files."""
