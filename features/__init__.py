"""The canonical data contract, the Parquet lake, point-in-time features and labels."""
