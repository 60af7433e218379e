"""Sensor logs → validated readings → labelled windows split by run."""
