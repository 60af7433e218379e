"""On-device runtime: manifest, backends, streaming windows, MQTT service. No torch here."""
