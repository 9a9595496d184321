"""The course itself: the labs' manifests, the starters made from the references, the student release."""
