"""A DVC pipeline benchmarking the classic CNNs on the Kaggle Dogs-vs-Cats photos."""
