"""gateway: Ray Serve application routing traffic between teacher and student."""
