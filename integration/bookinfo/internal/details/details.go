// Package details is Bookinfo's details service: the bibliographic facts
// of a book as JSON.
package details

import (
	"net/http"
	"strconv"

	"github.com/castellan-dev/castellan/integration/bookinfo/internal/catalog"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/hop"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/server"
)

// Handler serves GET /details/{id} and GET /health, and reports the
// caller's certificate on every response (see hop.ReportClient).
func Handler(cat *catalog.Catalog) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", server.Health("details"))
	mux.HandleFunc("GET /details/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			server.Error(w, http.StatusBadRequest, "details: product id must be an integer")
			return
		}
		d, ok := cat.Details(id)
		if !ok {
			server.Error(w, http.StatusNotFound, "details: no product with id "+strconv.Itoa(id))
			return
		}
		server.JSON(w, http.StatusOK, d)
	})
	return hop.ReportClient(mux)
}
