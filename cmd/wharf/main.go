// Command wharf is a self-hosted container registry gateway.
package main

func main() {}
