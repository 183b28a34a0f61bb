"""The lab network: two network namespaces joined by the lab's own wire (TUN devices),
with delay, loss and targeted drops, every segment decoded; scenarios and the ladder."""

__all__: list[str] = []
