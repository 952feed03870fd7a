"""The landing zone: raw and cleaned daily frames stored as Parquet, one file per trading day."""
