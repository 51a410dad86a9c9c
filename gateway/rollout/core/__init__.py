"""Pure core of the rollout controller: no Ray, HTTP or prometheus_client imports here."""
