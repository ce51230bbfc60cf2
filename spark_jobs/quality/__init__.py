"""What each run changed: profiles of its inputs and outputs, drift against a baseline, champion against
challenger, and the report that shows them."""
