"""params.yaml, typed: the sections the data stages read without torch (`sections`), and the whole
file with each selected architecture's recipe resolved against the model registry (`recipes`)."""
