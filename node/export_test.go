package node

// Brokers are the node's Kafka brokers, for tests that write the grant
// topic themselves.
func (n *Node) Brokers() []string { return n.kafka.Brokers }
