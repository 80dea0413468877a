"""Where and how a model runs (params `runtime`): the device, several processes, the preprocessed
tensors on the device with their batches and augmentation, and the one path every prediction takes."""
