"""A run's records: TensorBoard events and their descriptions, the per-epoch CSV, the run log
that writes them, and the MLflow and W&B trackers."""
