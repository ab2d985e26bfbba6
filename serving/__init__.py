"""Top floor: wires the engine and the channels together and runs them."""
