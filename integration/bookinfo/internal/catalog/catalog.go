// Package catalog holds Bookinfo's data: the one book of the original
// sample, its details, its two reviews and their ratings. It is read-only.
package catalog

// Product is a book on the product page.
type Product struct {
	ID              int    `json:"id"`
	Title           string `json:"title"`
	DescriptionHTML string `json:"descriptionHtml"`
}

// Details are a book's bibliographic facts, in the JSON shape of the
// original details service.
type Details struct {
	ID        int    `json:"id"`
	Author    string `json:"author"`
	Year      int    `json:"year"`
	Type      string `json:"type"`
	Pages     int    `json:"pages"`
	Publisher string `json:"publisher"`
	Language  string `json:"language"`
	ISBN10    string `json:"ISBN-10"`
	ISBN13    string `json:"ISBN-13"`
}

// Review is one reviewer's text about a book.
type Review struct {
	Reviewer string `json:"reviewer"`
	Text     string `json:"text"`
}

// Catalog is the read-only book data. The zero value is empty; use Default
// for the sample data.
type Catalog struct {
	products []Product
	details  map[int]Details
	reviews  map[int][]Review
	ratings  map[int]map[string]int
}

// Default returns the catalog of the original Bookinfo sample.
func Default() *Catalog {
	return &Catalog{
		products: []Product{{
			ID:    0,
			Title: "The Comedy of Errors",
			DescriptionHTML: `<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: ` +
				`The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his ` +
				`most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, ` +
				`in addition to puns and word play.`,
		}},
		details: map[int]Details{0: {
			ID: 0, Author: "William Shakespeare", Year: 1595, Type: "paperback", Pages: 200,
			Publisher: "PublisherA", Language: "English", ISBN10: "1234567890", ISBN13: "123-1234567890",
		}},
		reviews: map[int][]Review{0: {
			{Reviewer: "Reviewer1", Text: "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"},
			{Reviewer: "Reviewer2", Text: "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."},
		}},
		ratings: map[int]map[string]int{0: {"Reviewer1": 5, "Reviewer2": 4}},
	}
}

// Products returns every product, in ID order.
func (c *Catalog) Products() []Product { return append([]Product(nil), c.products...) }

// Product returns the product with the given ID.
func (c *Catalog) Product(id int) (Product, bool) {
	for _, p := range c.products {
		if p.ID == id {
			return p, true
		}
	}
	return Product{}, false
}

// Details returns the details of the book with the given ID.
func (c *Catalog) Details(id int) (Details, bool) {
	d, ok := c.details[id]
	return d, ok
}

// Reviews returns the reviews of the book with the given ID.
func (c *Catalog) Reviews(id int) ([]Review, bool) {
	r, ok := c.reviews[id]
	return append([]Review(nil), r...), ok
}

// Ratings returns the stars (1 to 5) each reviewer gave the book with the
// given ID.
func (c *Catalog) Ratings(id int) (map[string]int, bool) {
	r, ok := c.ratings[id]
	if !ok {
		return nil, false
	}
	out := make(map[string]int, len(r))
	for k, v := range r {
		out[k] = v
	}
	return out, true
}
