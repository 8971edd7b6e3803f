"""Avro schemas of metricfold's events, the codec, and the value rules shared by client and consumer."""
