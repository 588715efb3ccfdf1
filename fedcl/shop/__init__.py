"""A shop's side of fedcl, without Flower: the agent that trains and evaluates on the shop's
own data, the ingest of its event log, and the atomic, checksummed store of its state (which
the server's checkpoint uses too). ``fedcl.federated`` turns Flower messages into calls here."""
