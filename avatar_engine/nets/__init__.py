"""Pure `nn.Module` ports of upstream networks; each state_dict layout equals the official checkpoint's."""
