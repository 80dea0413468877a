"""Judging trained models: the metrics, through scikit-learn; what metrics.json tracks; the pictures
(confusion matrices, picture grids, curves); Grad-CAM."""
