// Package keystore owns the CA's private keys, at rest and in memory: a CA
// (signing certificate, chain, root and trust bundle) whose keys are
// unexported and used only through its methods; generating a root and
// intermediate (Generate, CA.NewIntermediate); the CA files of a data dir
// (LoadOrGenerate, Import); a plugged-in CA in Istio's cacerts layout
// (LoadPluggedIn, ReadPluginFiles, ParsePluggedIn); and the key-encryption
// key that seals the keys the authority journal stores (LoadKEK,
// KEK.Seal, KEK.OpenSigning, KEK.OpenRoot).
//
// No function or method of this package returns a private key, and the
// package is internal to ca/authority: nothing outside it can load a CA
// that signs.
package keystore
