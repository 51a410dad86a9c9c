"""Pure core of the gateway: no Ray, HTTP or prometheus_client imports here."""
