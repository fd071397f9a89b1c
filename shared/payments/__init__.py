"""What the gateway and the payment service share about payments: the provider interface and its providers
(signing, verification, querydr and refund), and the rules both apply to a provider's notification."""
