"""The photos, from a source to the preprocessed arrays: fetching, archives, decoding, labelling,
the split and preprocess file layout, worker pools. No torch: the data stages stay light."""
