"""SecAgg+: the server learns the sum of the clients' updates and nothing about any one of them."""
