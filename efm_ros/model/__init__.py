"""The Embodied Foundation Model: bins, network, export."""
