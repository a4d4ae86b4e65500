"""SadTalker networks (OpenTalker/SadTalker @ cd4c0465), state_dict layouts equal to the official checkpoints."""
