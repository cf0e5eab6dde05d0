"""The API's route modules, one router each (:func:`belep.api.app.build_app` includes them)."""
