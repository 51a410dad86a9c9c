"""HTTP surface of the gateway, free of Ray: body parsing/encoding (``api``), the route table
and OpenAPI document (``routes``), the admin token and split helpers (``admin``)."""
