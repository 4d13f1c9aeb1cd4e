package main

// The etcd arbiter (arbiter=etcd://HOST:PORT/PREFIX) registers itself with
// arbiter.Open; it is linked here, into the command, and not into the
// engine's packages and tests.
import _ "github.com/xl-kemari/xl-kemari/arbiter/etcd"
