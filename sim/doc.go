// Package sim runs the whole grant and booking pipeline under faults, one
// seed at a time: the real grant admission (claims, draws, leases),
// booking (partition owners, epochs, fences, commits), the budget grains'
// handlers and the lease reclaim, against a simulated grant topic and
// consumer group, a store of record in memory (storage.MemoryStore), a
// network between nodes and a clock, all in a testing/synctest bubble, so
// that time is virtual: a run of minutes of simulated time takes
// milliseconds. The seed decides the cluster, the load and every fault;
// every invariant is checked after every step. See sim_test.go.
package sim
