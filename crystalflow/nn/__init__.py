"""Neural-network building blocks shared by the backbones (torch)."""
