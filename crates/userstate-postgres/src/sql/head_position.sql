SELECT value FROM position_counter WHERE id = 1
