"""What a right answer is, per protocol: the replies and answers a correct server sends, computed
independently of the programs they judge."""
