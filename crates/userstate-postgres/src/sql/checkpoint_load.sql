SELECT position FROM checkpoints WHERE name = $1
