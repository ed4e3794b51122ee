"""The load harness: a Locust gRPC user of the bank and its banking mix."""
