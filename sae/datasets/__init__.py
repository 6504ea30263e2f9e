"""Built-in data: the MNI152 demo with artifacts and the planted ground-truth benchmark."""
